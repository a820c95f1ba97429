"""One module per paper experiment: the grid it runs, its tables and figures. Notebooks
call these; ``recipes`` holds the paper's training recipe per dataset, ``rotation`` the
accuracy-under-rotation analysis shared by 04-08, and ``grids`` the registry of the
notebooks' grids (notebook name -> grid builder)."""
