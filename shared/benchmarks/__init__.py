"""`dcodex bench workloads`: end-to-end workloads W1–W6 against a stack, beside their floors."""
