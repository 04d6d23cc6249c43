// elb.js: elastic load balancing of a Docker swarm service, from the sFlow blog post
// "Docker 1.12 swarm mode elastic load balancing" (InMon, 27 September 2016):
// https://blog.sflow.com/2016/09/docker-112-swarm-mode-elastic-load.html
//
// The script as published, run unchanged by fastflow (tests/test_scripts_elb.py). Edited, as the
// post tells its readers to: `api` (the swarm manager's Docker API), `certs` (the directory holding
// ca.pem, cert.pem, key.pem; here relative to this file), `service`, and the thresholds (CPU in
// percent of one CPU and bytes per second, set for the test's bounded load).
// NOTE: transcribed for fastflow; compare with the post before relying on line-for-line identity.

var api = "https://127.0.0.1:2376";
var certs = 'tls/';
var service = 'apache';

var replicas_min = 1;
var replicas_max = 3;
var util_min = 5;
var util_max = 25;
var bytes_min = 1000000000000;
var bytes_max = 2000000000000;
var enabled = false;

function getInfo(name) {
  var info = null;
  var url = api+'/services/'+name;
  try { info = JSON.parse(http2({url:url, certs:certs}).body); }
  catch(e) { logWarning("cannot get " + url); }
  return info;
}

function setReplicas(name,count,info) {
  var version = info["Version"]["Index"];
  var spec = info["Spec"];
  spec["Mode"]["Replicated"]["Replicas"]=count;
  var url = api+'/services/'+name+'/update?version='+version;
  try {
    http2({
      url:url, certs:certs, method:'POST',
      headers:{'Content-Type':'application/json'},
      body:JSON.stringify(spec)
    });
  }
  catch(e) { logWarning("cannot post to " + url); }
}

setIntervalHandler(function() {
  var info = getInfo(service);
  if(!info) return;

  var replicas = info["Spec"]["Mode"]["Replicated"]["Replicas"];
  if(!replicas) {
    logWarning("no active members of service " + service);
    return;
  }

  var res = metric(
    'ALL',
    'avg:vir_cpu_utilization,avg:vir_bytes_in,avg:vir_bytes_out',
    {'vir_host_name':[service+'\\.*'],'vir_cpu_state':['running']}
  );

  var n = res[0].metricN;

  // we aren't seeing telemetry from all members of the service
  if(n < replicas) return;

  var util = res[0].metricValue;
  var bytes = res[1].metricValue + res[2].metricValue;

  if(!enabled) return;

  // load balancing
  if(util > util_max || bytes > bytes_max) {
    if(replicas < replicas_max) {
      setReplicas(service,replicas + 1,info);
      logInfo(service+" set replicas="+(replicas+1));
    }
  }
  else if(util < util_min && bytes < bytes_min) {
    if(replicas > replicas_min) {
      setReplicas(service,replicas - 1,info);
      logInfo(service+" set replicas="+(replicas-1));
    }
  }
},2);

setHttpHandler(function(req) {
  enabled = req.query && req.query.state && req.query.state[0] === 'enabled';
  return enabled ? "enabled" : "disabled";
});
