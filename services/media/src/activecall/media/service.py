"""The media worker process."""

from __future__ import annotations

from activecall.service import BaseService


class MediaService(BaseService):
    role = "media"

    @property
    def capacity(self) -> int:
        return self.runtime.config.media.capacity
