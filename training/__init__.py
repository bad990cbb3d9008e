"""SEE training: the closed loop of calibration-coupled GRPO and masked judge distillation."""
