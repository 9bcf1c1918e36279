"""Implementation modules of aia_ext; nothing here is public API."""
