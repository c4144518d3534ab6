"""Which phantom seeds serve what: training, validation (checkpoint choice) and testing never
share a seed, so a reported number is on phantoms the network never saw."""

TRAIN_PHANTOM_SEED0 = 10_000  # phantoms seen in training: seeds 10000, 10001, ...
VAL_PHANTOM_SEED0 = 20_000  # validation phantoms (best-checkpoint selection)
TEST_PHANTOM_SEED0 = 30_000  # fresh phantoms for the reported scar accuracy: never used in training
FULL_FOV_PHANTOM_SEED0 = 40_000  # full-field-of-view phantoms seen in training
TEST_FULL_FOV_SEED0 = 50_000  # fresh full-field-of-view phantoms for evaluation: never used in training
THORAX_SEED0 = 0  # domain-randomised whole-thorax training scans (`lascarseg phantom thorax`): seeds 0, 1, ...
TEST_WHOLE_SCAN_SEED0 = 70_000  # hold-out whole-chest scans (`synth.holdout`): testing only, never training
