"""The shared core every stage uses: settings (config), errors, atomic file writes (fileio), the
submission grid (geometry), OS locks (locks), the run-folder format (runs) and checkpoints (checkpoint).
Imported by module path, e.g. `from competition.core.config import resolve`; it imports no stage.
"""
