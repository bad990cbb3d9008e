import subprocess
import sys


def test_importing_selfeval_imports_no_torch_vllm_or_fastapi():
    code = (
        "import sys, selfeval.rubric, selfeval.prompts, selfeval.block, selfeval.readout;"
        "import selfeval.card, selfeval.models;"
        "heavy = [m for m in ('torch', 'vllm', 'fastapi', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
