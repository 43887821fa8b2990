"""Layout passes (opt level 3): the order of a tensor's dims chosen for the kernels."""
