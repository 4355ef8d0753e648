"""Group `maintenance`: the lakehouse restore at the head of the data job, the weekly gap
repair and the audit. Unpartitioned: they act on the lakehouse as a whole."""
