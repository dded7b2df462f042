package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/harness"
)

// toggleResult is what one toggle phase measured: the caddy process's CPU
// per second over each sub-window, paused and recording, in the order
// they ran, and each adjacent pair's difference.
type toggleResult struct {
	paused, recording []float64 // CPU s/s
	diffs             []float64 // each adjacent pair: recording minus paused, CPU s/s
}

// togglePattern is the order of the sub-windows, repeated: P R R P, so
// that a load that drifts over the phase favours neither.
var togglePattern = [...]bool{false, true, true, false}

// toggleCost measures the recorder's own CPU inside one caddy process
// while the ring writer goes on and no client is connected: the admin
// API pauses and resumes the recorder (POST /sdr/recorder/pause,
// /resume) in togglePattern's order, and the process's CPU (scheduler
// time of its threads, ns precision) is taken over each sub-window of
// length sub, for about total. Each sub-window starts settle after the
// switch: a resumed stream records again from its next keyframe (a GOP at
// most), and a paused one publishes what it had gathered. Paused, the
// stream's source still reads every frame (the recorder stays subscribed),
// so a pair's difference is the recorder's work alone.
//
// Why without clients: the live path's CPU with 100 clients moves by
// ±10% between sub-windows of a few seconds (its socket writes), more
// than the recorder costs, in one process as between two; the recorder's
// work does not depend on the clients. The BENCH line puts this
// difference over the run without the recorder's CPU with the clients.
func toggleCost(c *server, total, sub, settle time.Duration) (toggleResult, error) {
	var res toggleResult
	post := func(action string) error {
		resp, err := http.Post(fmt.Sprintf("http://%s/sdr/recorder/%s", c.admin, action), "", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /sdr/recorder/%s: %s", action, resp.Status)
		}
		return nil
	}
	var cpus []float64
	n := max(2, int(total/(sub+settle))&^1) // whole pairs
	for i := range n {
		rec := togglePattern[i%len(togglePattern)]
		action := "pause"
		if rec {
			action = "resume"
		}
		if err := post(action); err != nil {
			return res, err
		}
		time.Sleep(settle)
		c0, err := harness.SchedCPUSeconds(c.Pid())
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		time.Sleep(sub)
		c1, err := harness.SchedCPUSeconds(c.Pid())
		if err != nil {
			return res, err
		}
		v := (c1 - c0) / time.Since(t0).Seconds()
		cpus = append(cpus, v)
		if rec {
			res.recording = append(res.recording, v)
		} else {
			res.paused = append(res.paused, v)
		}
		if i%2 == 1 {
			p, r := v, cpus[i-1]
			if rec {
				p, r = cpus[i-1], v
			}
			res.diffs = append(res.diffs, r-p)
		}
	}
	if err := post("resume"); err != nil {
		return res, err
	}
	return res, nil
}
