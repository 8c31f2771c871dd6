-- Route paediatric TSC brain MR studies from Orthanc to the TSC DICOM node.
--
-- Orthanc calls OnStableStudy once no instance of a study has arrived for
-- "StableAge" seconds. The rule below sends the study to the node when
--   * the study holds an MR series,
--   * its description (study or requested procedure) matches one of
--     DescriptionPatterns, or one of its procedure codes is in ProcedureCodes,
--   * the patient is younger than MaxAgeYears at the study date (PatientAge, or
--     PatientBirthDate and StudyDate),
--   * and the study was not routed before (guard: study metadata "TscRouted",
--     and no instance of the study came from the node's AE), so the SR the node
--     sends back into the same study never triggers a second routing.
--
-- Settings come from the "TscRouting" section of the Orthanc configuration:
--   "TscRouting" : {
--     "NodeModality" : "tsc-node",           // entry of DicomModalities
--     "NodeAet" : "TSCNODE",                 // AE title the results come from
--     "DescriptionPatterns" : [ "TSC", "TUBEROUS" ],   // case-insensitive substrings
--     "ProcedureCodes" : [ "TSC-MR-BRAIN" ], // CodeValue of (0008,1032) / (0032,1064)
--     "MaxAgeYears" : 18,
--     "Asynchronous" : true                  // store as an Orthanc job (retried by resubmitting)
--   }
-- and "UserMetadata" : { "TscRouted" : 1024 } must be declared.
--
-- Failed sends: with Asynchronous=true the send is an Orthanc job; when the node
-- is down the job ends in state "Failure" and is resubmitted by
-- `python -m app.node.orthanc_retry` (run it periodically; see docs/dicom-node.md).
-- The study is marked routed only once the job is created, so an Orthanc restart
-- before that re-evaluates it.

local cfg = (GetOrthancConfiguration() or {})["TscRouting"] or {}
local NODE_MODALITY = cfg["NodeModality"] or "tsc-node"
local NODE_AET = cfg["NodeAet"] or "TSCNODE"
local PATTERNS = cfg["DescriptionPatterns"] or { "TSC", "TUBEROUS" }
local CODES = cfg["ProcedureCodes"] or {}
local MAX_AGE_YEARS = tonumber(cfg["MaxAgeYears"] or 18)
local ASYNC = cfg["Asynchronous"]
if ASYNC == nil then ASYNC = true end

local function log(msg, studyId)
  print("[route_tsc] study " .. studyId .. ": " .. msg)
end

local function upper(s)
  if s == nil then return "" end
  return string.upper(s)
end

local function matchesPattern(text)
  local t = upper(text)
  if t == "" then return false end
  for _, p in ipairs(PATTERNS) do
    if string.find(t, upper(p), 1, true) ~= nil then return true end
  end
  return false
end

local function codeListed(code)
  if code == nil or code == "" then return false end
  for _, c in ipairs(CODES) do
    if upper(c) == upper(code) then return true end
  end
  return false
end

-- Age in years from a DICOM age string ("004Y", "018M", "010W", "030D").
local function ageFromAgeString(s)
  if s == nil then return nil end
  local n, unit = string.match(s, "^(%d+)([YMWD])$")
  if n == nil then return nil end
  n = tonumber(n)
  if unit == "Y" then return n elseif unit == "M" then return n / 12
  elseif unit == "W" then return n / 52.18 else return n / 365.25 end
end

-- Age in years at the study from YYYYMMDD dates.
local function ageFromDates(birth, studyDate)
  if birth == nil or studyDate == nil then return nil end
  local by, bm, bd = string.match(birth, "^(%d%d%d%d)(%d%d)(%d%d)")
  local sy, sm, sd = string.match(studyDate, "^(%d%d%d%d)(%d%d)(%d%d)")
  if by == nil or sy == nil then return nil end
  return (tonumber(sy) - tonumber(by)) + (tonumber(sm) - tonumber(bm)) / 12
         + (tonumber(sd) - tonumber(bd)) / 365.25
end

local function codesOf(tags, keyword)
  local out = {}
  local seq = tags[keyword]
  if type(seq) == "table" then
    for _, item in ipairs(seq) do
      if type(item) == "table" and item["CodeValue"] ~= nil then
        table.insert(out, item["CodeValue"])
      end
    end
  end
  return out
end

function OnStableStudy(studyId, tags, metadata)
  if metadata ~= nil and metadata["TscRouted"] ~= nil then
    return  -- already routed: the node's results coming back must not re-trigger
  end
  local study = ParseJson(RestApiGet("/studies/" .. studyId))
  if study == nil then return end
  local studyTags = study["MainDicomTags"] or {}
  local patientTags = study["PatientMainDicomTags"] or {}

  -- Modality and the guard against our own results.
  local hasMR = false
  local firstInstance = nil
  for _, seriesId in ipairs(study["Series"] or {}) do
    local series = ParseJson(RestApiGet("/series/" .. seriesId))
    if series ~= nil then
      local modality = (series["MainDicomTags"] or {})["Modality"]
      if modality == "MR" then
        hasMR = true
        if firstInstance == nil and series["Instances"] ~= nil then
          firstInstance = series["Instances"][1]
        end
      end
      for _, instanceId in ipairs(series["Instances"] or {}) do
        local aet = RestApiGet("/instances/" .. instanceId .. "/metadata/RemoteAET")
        if aet ~= nil and upper(aet) == upper(NODE_AET) then
          log("holds results from " .. NODE_AET .. "; not routed again", studyId)
          return
        end
        break  -- one instance per series is enough for the origin check
      end
    end
  end
  if not hasMR or firstInstance == nil then
    return
  end

  -- Tags that are not in the study-level summary come from one MR instance.
  local inst = ParseJson(RestApiGet("/instances/" .. firstInstance .. "/simplified-tags")) or {}

  local selected = matchesPattern(studyTags["StudyDescription"])
      or matchesPattern(inst["RequestedProcedureDescription"])
      or matchesPattern(inst["StudyDescription"])
  if not selected then
    for _, kw in ipairs({ "ProcedureCodeSequence", "RequestedProcedureCodeSequence" }) do
      for _, code in ipairs(codesOf(inst, kw)) do
        if codeListed(code) then selected = true end
      end
    end
  end
  if not selected then
    log("description/procedure not a TSC brain MR; not routed", studyId)
    return
  end

  local age = ageFromAgeString(inst["PatientAge"])
  if age == nil then
    age = ageFromDates(patientTags["PatientBirthDate"] or inst["PatientBirthDate"],
                       studyTags["StudyDate"] or inst["StudyDate"])
  end
  if age == nil or age >= MAX_AGE_YEARS then
    log("patient age unknown or not paediatric; not routed", studyId)
    return
  end

  local body = DumpJson({ Resources = { studyId }, Synchronous = not ASYNC }, true)
  local answer = RestApiPost("/modalities/" .. NODE_MODALITY .. "/store", body)
  if answer == nil then
    log("sending to " .. NODE_MODALITY .. " failed; will be evaluated again when the study changes", studyId)
    return
  end
  RestApiPut("/studies/" .. studyId .. "/metadata/TscRouted", "1")
  log("routed to " .. NODE_MODALITY, studyId)
end
