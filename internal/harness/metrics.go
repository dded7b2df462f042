package harness

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Metrics reads the Prometheus text exposition at url with c: each
// sample's value by its series (`name` or `name{labels}`).
func Metrics(c *http.Client, url string) (map[string]string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("reading metrics at %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading metrics at %s: %s", url, resp.Status)
	}
	samples := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		samples[line[:i]] = line[i+1:]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading metrics at %s: %w", url, err)
	}
	return samples, nil
}

// Counters reads the metrics at url and returns the samples whose metric
// name starts with prefix, by name without it, summed over their labels.
func Counters(c *http.Client, url, prefix string) (map[string]float64, error) {
	samples, err := Metrics(c, url)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for series, val := range samples {
		name, _, _ := strings.Cut(series, "{")
		name, found := strings.CutPrefix(name, prefix)
		if !found {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += v
		}
	}
	return out, nil
}
