-- Argo CD health check for keymount's SecretSync (secret-sync.x-k8s.io/v1alpha1), read from
-- the Ready condition the controller writes. Install it in argocd-cm under the key
-- `resource.customizations.health.secret-sync.x-k8s.io_SecretSync: |` with the script
-- indented below; deploy/argocd/argocd-cm-patch.yaml is that patch, holding this file verbatim.
-- Written for Lua 5.1 as Argo CD's gopher-lua runs it; tests/argocd_health.rs runs it in lua5.4.
local hs = {}
local waiting = "Waiting for the controller to sync this SecretSync"
local generation = obj.metadata and obj.metadata.generation

-- A status written for an older spec says nothing about the current one.
local function behind(observed)
  return observed == nil or (generation ~= nil and observed < generation)
end

local ready = nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
      break
    end
  end
end

if obj.status == nil or behind(obj.status.observedGeneration) or ready == nil
    or (ready.observedGeneration ~= nil and behind(ready.observedGeneration)) then
  hs.status = "Progressing"
  hs.message = waiting
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  if hs.message == nil or hs.message == "" then
    hs.message = "Secret synced"
  end
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason or "NotReady"
  if ready.message ~= nil and ready.message ~= "" then
    hs.message = hs.message .. ": " .. ready.message
  end
else
  -- Unknown: the controller is still deciding.
  hs.status = "Progressing"
  hs.message = ready.message
  if hs.message == nil or hs.message == "" then
    hs.message = waiting
  end
end
return hs
