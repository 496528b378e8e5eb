from e2e_system import system

__all__ = ["system"]
