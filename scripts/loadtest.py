#!/usr/bin/env python3
"""Thin wrapper: run the load test from a checkout without installing it.

    scripts/loadtest.py connect --clients 5000 --ramp 250 --duration 30 --server 127.0.0.1:8600

The code lives in client/loadtest/ (installed as `meeting-loadtest`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    from client.loadtest import main
    sys.exit(main())
