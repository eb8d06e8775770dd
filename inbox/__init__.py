"""Video files arriving from outside the recorders: the folder watcher and the ingest folders.

No flow is imported here: the watcher is a small long-running program that only emits
Prefect events; the `ingest-video` flow uses the folder helpers.
"""
