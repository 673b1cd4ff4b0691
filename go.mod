module github.com/switchboardgw/switchboard

go 1.26.8
