"""Video encode, probe and decode helpers (PyAV in-process; decord is the loaders' default reader)."""
import av.logging

# FFmpeg's own stderr chatter ("[vp9 @ 0x..] ...") would drown progress bars; errors still raise.
av.logging.set_level(av.logging.PANIC)
