"""Names of target machines, shared by the manifest and the environments without
importing either (the environments' registry is read at every command's start)."""

LOCAL = "local"  # the target name of the machine isobench runs on
