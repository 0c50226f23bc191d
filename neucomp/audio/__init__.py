"""Audio in and out: readers (files, pipes, arrays), the one resampler and channel rule,
writers and the one atomic write. The names most callers need are re-exported here."""

from neucomp.audio.base import (
    AUDIO_EXTENSIONS,
    BLOCK_FRAMES,
    STDIO,
    AudioInfo,
    AudioReader,
    check_format,
    display_name,
)
from neucomp.audio.readers import ArrayReader, load_reference, open_audio, read_audio
from neucomp.audio.signal import (
    Resampler,
    fit_length,
    from_model_channels,
    resample,
    to_model_channels,
    to_mono,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "BLOCK_FRAMES",
    "STDIO",
    "ArrayReader",
    "AudioInfo",
    "AudioReader",
    "Resampler",
    "check_format",
    "display_name",
    "fit_length",
    "from_model_channels",
    "load_reference",
    "open_audio",
    "read_audio",
    "resample",
    "to_model_channels",
    "to_mono",
]
