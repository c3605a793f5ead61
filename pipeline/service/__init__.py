"""The unattended service: one cycle, the scheduler, alert delivery."""
