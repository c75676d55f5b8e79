-- Argo CD health of an s3flow resource, S3Ingest or S3ParallelScan (the same script for both),
-- read from the status the operator writes: phase, observedGeneration and the kstatus conditions
-- Ready, Reconciling and Stalled. Lua 5.1 with Argo CD's default libraries for custom checks
-- (base and table only: no string functions).
local hs = {status = "Progressing", message = "Waiting for the operator"}
local status = obj.status
local generation = obj.metadata.generation
-- No status, or one written for an older spec: the operator has not acted on this spec yet.
if status == nil or status.phase == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  return hs
end

local function condition(kind)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

local function text(value, fallback)
  if value == nil or value == "" then
    return fallback
  end
  return value
end

if status.phase == "Succeeded" then
  local ready = condition("Ready")
  hs.status = "Healthy"
  hs.message = text(ready and ready.message, "Succeeded")
elseif status.phase == "Failed" then
  local stalled = condition("Stalled")
  if stalled == nil or stalled.status ~= "True" then
    stalled = condition("Ready")
  end
  hs.status = "Degraded"
  if stalled == nil then
    hs.message = "Failed"
  else
    hs.message = text(stalled.reason, "Failed") .. ": " .. text(stalled.message, "no details")
  end
else
  -- Pending or Running: the Reconciling condition says what the operator is doing.
  local reconciling = condition("Reconciling")
  hs.message = text(reconciling and reconciling.message, status.phase)
  if status.progress ~= nil then
    if obj.kind == "S3ParallelScan" then
      hs.message = hs.message .. " (" .. status.progress .. " chunks)"
    else
      hs.message = hs.message .. " (" .. status.progress .. ")"
    end
  end
end
return hs
