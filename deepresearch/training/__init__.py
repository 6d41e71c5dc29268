"""Language-model training: packing with document-aware masks, stage datasets, and the training loops.

    packing.py   samples -> fixed-length rows (labels, per-document positions, segment ids), 4D masks
    data.py      mid-training 1/2 and SFT sources; PackedDataset, whose order is a function of (seed, epoch)

Importing this package is cheap: torch is imported inside the functions.
"""
