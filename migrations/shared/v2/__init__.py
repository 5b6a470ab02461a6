"""Version 2 of the revision helpers (1.1). Frozen once released: change it by adding v3.

- :mod:`.run`: running literal SQL online, or writing it to the offline script;
- :mod:`.indexes`: concurrent index builds that wait for older transactions, saying so.
"""
