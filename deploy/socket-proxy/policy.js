// The Docker socket proxy's policy, run by nginx's JavaScript module (njs) on every call that
// creates a container or touches one: nginx's own allowlist (nginx.conf) cannot read request
// bodies or a container's labels.
//
// - A create must label the container as the console's, and may not ask for privileged mode,
//   added capabilities, devices other than GPUs, the host's (or another container's) pid, ipc,
//   uts, user or network namespaces, security options, sysctls, a log driver that ships logs off
//   the host, or bind mounts outside the allowed sources (never the Docker socket).
// - Every other call on a container (inspect, logs, top, stats, start, stop, restart, wait,
//   remove) is allowed only for a container carrying the console's label.
// Whatever the caller: the worker is the only service on the proxy's network, but a compromised
// worker gets no more than this.

const MANAGED = "io.instance-console.managed";
const SOCKETS = ["/var/run/docker.sock", "/run/docker.sock"];

function refuse(r, why) {
    r.headersOut["Content-Type"] = "application/json";
    r.return(403, JSON.stringify({message: "refused by the console's Docker socket proxy: " + why}) + "\n");
}

function list(text) {
    return (text || "").split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

function normal(path) {
    const parts = [];
    const pieces = path.split("/");
    for (let i = 0; i < pieces.length; i++) {
        if (pieces[i] === "" || pieces[i] === ".") continue;
        if (pieces[i] === "..") return null;
        parts.push(pieces[i]);
    }
    return "/" + parts.join("/");
}

// A bind source: an absolute path under an allowed source, never a Docker socket. Named volumes
// (no slash) are Docker's own storage, not the host's file system.
function bindProblem(r, source) {
    if (source.indexOf("/") !== 0) return null;
    const path = normal(source);
    if (path === null) return "bind source " + source + " climbs out with ..";
    const exposes = SOCKETS.some((socket) => path === "/" || path === socket || socket.indexOf(path + "/") === 0);
    if (exposes) return "bind source " + source + " exposes the Docker socket";
    const inside = list(r.variables.allowed_bind_sources).some((allowed) => {
        const root = normal(allowed);
        return root !== null && (path === root || path.indexOf(root + "/") === 0);
    });
    if (inside) return null;
    return "bind source " + source + " is outside the allowed sources (" + (r.variables.allowed_bind_sources || "none") + ")";
}

function namespaceProblem(host, key) {
    const mode = host[key];
    if (mode === undefined || mode === null || mode === "" || mode === "private" || mode === "shareable") return null;
    return key + " " + mode + " is not allowed";
}

const LOG_DRIVERS = ["", "json-file", "local", "journald", "none"];

function createProblem(r, spec) {
    if (typeof spec !== "object" || spec === null || Array.isArray(spec)) return "the body is not a JSON object";
    const labels = spec.Labels || {};
    if (labels[MANAGED] !== "true") return "a container must carry the label " + MANAGED + "=true";
    const host = spec.HostConfig || {};
    if (host.Privileged) return "privileged mode is not allowed";
    if ((host.CapAdd || []).length) return "added capabilities are not allowed";
    if ((host.Devices || []).length) return "devices are not allowed (GPUs go through device requests)";
    if ((host.DeviceCgroupRules || []).length) return "device cgroup rules are not allowed";
    const requests = host.DeviceRequests || [];
    for (let i = 0; i < requests.length; i++) {
        const caps = [].concat.apply([], requests[i].Capabilities || []);
        if (!caps.length || caps.some((c) => c !== "gpu")) return "only GPU device requests are allowed";
    }
    const namespaces = ["PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"];
    for (let i = 0; i < namespaces.length; i++) {
        const problem = namespaceProblem(host, namespaces[i]);
        if (problem) return problem;
    }
    const network = host.NetworkMode || "";
    if (network === "host" || network.indexOf("container:") === 0) {
        if (list(r.variables.allowed_network_modes).indexOf(network.split(":")[0]) < 0) return "network mode " + network + " is not allowed";
    }
    if ((host.SecurityOpt || []).length) return "security options are not allowed";
    if (host.Sysctls && Object.keys(host.Sysctls).length) return "sysctls are not allowed";
    if (host.CgroupParent) return "a cgroup parent is not allowed";
    if (host.VolumeDriver || (host.VolumesFrom || []).length) return "volume drivers and volumes-from are not allowed";
    // Logs stay on the host: a driver that ships them elsewhere (syslog, gelf, fluentd...) would make
    // the daemon send prompts and answers to any address the caller names.
    const driver = (host.LogConfig || {}).Type || "";
    if (LOG_DRIVERS.indexOf(driver) < 0) return "log driver " + driver + " is not allowed (logs stay on the host)";
    const binds = host.Binds || [];
    for (let i = 0; i < binds.length; i++) {
        const problem = bindProblem(r, String(binds[i]).split(":")[0]);
        if (problem) return problem;
    }
    const mounts = host.Mounts || [];
    for (let i = 0; i < mounts.length; i++) {
        if (mounts[i].Type === "bind") {
            const problem = bindProblem(r, String(mounts[i].Source || ""));
            if (problem) return problem;
        } else if (mounts[i].Type !== "volume" && mounts[i].Type !== "tmpfs") {
            return "mounts of type " + mounts[i].Type + " are not allowed";
        }
    }
    return null;
}

function create(r) {
    let spec;
    try {
        spec = JSON.parse(r.requestText || "");
    } catch (e) {
        return refuse(r, "the body is not JSON");
    }
    const problem = createProblem(r, spec);
    if (problem) return refuse(r, problem);
    r.internalRedirect("@docker");
}

// Any call on one container: only a container the console labelled as its own.
async function container(r) {
    const id = r.variables.container_id;
    const reply = await r.subrequest("/_inspect/containers/" + encodeURIComponent(id) + "/json", {method: "GET"});
    if (reply.status !== 200) {
        r.headersOut["Content-Type"] = "application/json";
        return r.return(reply.status, reply.responseText);
    }
    let labels = {};
    try {
        labels = (JSON.parse(reply.responseText).Config || {}).Labels || {};
    } catch (e) {
        return refuse(r, "could not read the container's labels");
    }
    if (labels[MANAGED] !== "true") return refuse(r, "container " + id + " is not the console's");
    r.internalRedirect("@docker");
}

export default {create, container};
