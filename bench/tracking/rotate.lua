-- wrk script: each request takes the next path from the file named by PATHS (one per line),
-- so every hit is a different recipient's token, as in a real send.
local file = os.getenv("PATHS")
local paths = {}
for line in io.lines(file) do paths[#paths + 1] = line end
local i = math.random(#paths)

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], { ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0" })
end
