"""equivlib: exactly equivariant P4/P4M layers and tools that tell whether a network is exact.

Runnable companion of *Using and Abusing Equivariance* (Edixhoven, Lengyel, van Gemert,
ICCV Workshops 2023). See DESIGN.md in the shared folder and README.md.
"""

__version__ = "0.1.0"
