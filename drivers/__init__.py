"""Device-role contracts (``drivers.interfaces``), their error hierarchy and, later, real instrument drivers."""
