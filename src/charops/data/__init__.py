"""Character data: typed records, importers, validation and dataset preparation.

    charops data validate samples/                # what would be accepted / rejected, and why
    charops data prepare --model runs/base --out runs/dataset
"""
