"""Where the heavy work runs: here, or fanned out over a Ray cluster (`cluster`)."""
