"""Running a corral node on this host: `corral up` / `corral down`."""
