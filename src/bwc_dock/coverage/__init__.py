"""Coverage review: each dispatched call's video from the officers sent to it, or why none."""
