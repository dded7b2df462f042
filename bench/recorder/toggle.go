package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/harness"
)

// toggleResult is what one toggle phase measured: the caddy process's CPU
// per second over each sub-window, paused and recording, in the order
// they ran.
type toggleResult struct {
	paused, recording []float64 // CPU s/s
	pcts              []float64 // each adjacent pair: recording over paused, % increase
}

// togglePattern is the order of the sub-windows, repeated: P R R P, so
// that a load that drifts over the phase favours neither.
var togglePattern = [...]bool{false, true, true, false}

// toggleCost measures the recorder's CPU inside one caddy process, with
// the same clients connected throughout: the admin API pauses and resumes
// the recorder (POST /sdr/recorder/pause, /resume) in togglePattern's
// order, and the process's CPU (scheduler time of its threads, ns
// precision) is taken over each sub-window of length sub. Each sub-window
// starts settle after the switch: a resumed stream records again from
// its next keyframe (a GOP at most), and a paused one publishes what it
// had gathered. The two runs' difference (cpu_overhead_runs_pct) compares
// two processes whose live path alone moves by more than the recorder
// costs; adjacent sub-windows of one process do not.
func toggleCost(c *server, o options, sub, settle time.Duration) (toggleResult, error) {
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var cpus []float64
	var states []bool
	_, err := measure(c, o, "", func() {
		go func() {
			done <- func() error {
				for i := 0; ; i++ {
					rec := togglePattern[i%len(togglePattern)]
					action := "pause"
					if rec {
						action = "resume"
					}
					if err := post(action); err != nil {
						return err
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(settle):
					}
					c0, err := harness.SchedCPUSeconds(c.Pid())
					t0 := time.Now()
					if err != nil {
						return err
					}
					select {
					case <-ctx.Done():
						return nil // the window ended within the sub-window: not counted
					case <-time.After(sub):
					}
					c1, err := harness.SchedCPUSeconds(c.Pid())
					if err != nil {
						return err
					}
					cpus = append(cpus, (c1-c0)/time.Since(t0).Seconds())
					states = append(states, rec)
				}
			}()
		}()
	}, func() {
		cancel()
	})
	if err != nil {
		return res, err
	}
	if err := <-done; err != nil {
		return res, err
	}
	if err := post("resume"); err != nil {
		return res, err
	}
	for i, v := range cpus {
		if states[i] {
			res.recording = append(res.recording, v)
		} else {
			res.paused = append(res.paused, v)
		}
		if i%2 == 1 {
			p, r := cpus[i-1], v
			if states[i-1] {
				p, r = v, cpus[i-1]
			}
			if p > 0 {
				res.pcts = append(res.pcts, (r/p-1)*100)
			}
		}
	}
	return res, nil
}
