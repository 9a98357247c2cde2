"""placeholder"""
def cmd_verify(argv):
    raise NotImplementedError
