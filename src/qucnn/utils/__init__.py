"""Support code below everything else: input checks and the usage error, seeds, devices, atomic files,
figures and provenance. Nothing here imports another part of qucnn."""
