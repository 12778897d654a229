module github.com/looksam/vitsam

go 1.26
