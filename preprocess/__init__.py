"""Preprocess stage: render shards -> (source, target) pairs with depth, splatted partial views and masks."""
