"""Effects: the only modules that import paramiko and python_terraform."""
