"""Core: configuration, identity, the record, the registry, threats — imported by every layer and plugin; imports no other layer."""
