"""ISAPI (Hikvision) protocol pieces used by `blocks.recorder`: errors, XML parsing, device time, downloads."""
