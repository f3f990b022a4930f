module sluice/compat/scenario

go 1.26.0
