"""Where events come from: files (OSS dumps, exports); SLS and LookupEvents next."""
