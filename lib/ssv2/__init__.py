"""Something-Something-v2: the dataset's layout, label files, synthetic generator and ingestion."""
