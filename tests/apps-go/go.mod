module appsgo

go 1.19
