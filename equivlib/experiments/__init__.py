"""One module per paper experiment: the grid it runs, its tables and figures. Notebooks
call these; ``protocols`` holds the paper's training protocol per dataset."""
