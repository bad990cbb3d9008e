"""SEE evaluation: answers with self-scores, judged, measured for calibration, reported."""
