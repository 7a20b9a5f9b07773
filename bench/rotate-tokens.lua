-- wrk script: each request carries the next token of TOKENS_FILE (one per line), so a
-- pool of N tokens is cycled; N = 1,000 keeps caches warm, N = 100,000 keeps them cold.
local tokens = {}
local i = 0

for line in io.lines(os.getenv("TOKENS_FILE")) do
  tokens[#tokens + 1] = "Bearer " .. line
end

request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/", { ["Authorization"] = tokens[i] })
end
