"""Version 1 of the revision helpers, as 1.0.0 released them (revisions 0004 and 0005)."""
