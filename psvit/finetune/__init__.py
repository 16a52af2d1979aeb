"""``python -m psvit.finetune`` (or ``torchrun ... -m psvit.finetune``): see :mod:`psvit.cli.finetune`."""
