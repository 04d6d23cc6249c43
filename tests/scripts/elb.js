// elb.js: elastic load balancing of a Docker swarm service, after the sFlow blog post
// "Docker 1.12 swarm mode elastic load balancing" (InMon, 27 September 2016):
// https://blog.sflow.com/2016/09/docker-112-swarm-mode-elastic-load.html
//
// RECONSTRUCTED, not copied: the post's text could not be read where fastflow is built, so this file
// follows the post's structure (getInfo/setReplicas over http2 with certs, the metric() query with
// the 'apache\\.*' host-name filter, the metricN guard, the thresholds, the state=enabled switch).
// The settings block below is the reader's to edit, as the post says; tests/test_scripts_elb.py
// edits only those lines (api, certs, service and the limits) and runs the rest unchanged. To run
// the post's own text instead, point FASTFLOW_ELB_JS at a copy of it.

var api = "https://manager:2376";
var certs = '/etc/docker/certs/';
var service = 'apache';

var replicas_min = 1;
var replicas_max = 10;
var util_min = 0.5;
var util_max = 1;
var bytes_min = 50000;
var bytes_max = 100000;
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
