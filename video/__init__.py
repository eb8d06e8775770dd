"""Plain libraries for video files, with no Prefect in them: probing, MP4 layout, frame sampling,
transcode commands, and detection (motion, regions, tracking, detect)."""
