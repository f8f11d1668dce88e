package report

import (
	"encoding/xml"
	"fmt"
)

// JUnit XML as test-report UIs read it (Jenkins' schema, which GitHub
// test-report actions, GitLab and others take): one <testsuite> per kernel
// and suite, named KERNEL/SUITE; a VM that failed is a failed "boot" case.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Skipped   int         `xml:"skipped,attr"`
	Time      string      `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr,omitempty"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func seconds(s float64) string { return fmt.Sprintf("%.3f", s) }

// JUnit renders the report as JUnit XML.
func (r *Report) JUnit() ([]byte, error) {
	all := junitSuites{Name: "xdplab kernel matrix"}
	total := 0.0
	for _, k := range r.Kernels {
		total += k.Seconds
		var order []string
		bySuite := map[string]*junitSuite{}
		suite := func(name string) *junitSuite {
			if bySuite[name] == nil {
				bySuite[name] = &junitSuite{Name: k.ID() + "/" + name, Timestamp: r.Time}
				order = append(order, name)
			}
			return bySuite[name]
		}
		if k.Error != "" {
			s := suite("vm")
			s.Cases = append(s.Cases, junitCase{Name: "boot", Classname: "TestMatrix/" + k.ID() + "/vm", Time: seconds(k.Seconds),
				Failure: &junitMessage{Message: firstLine(k.Error), Text: k.Error}})
			s.Failures++
		}
		for _, c := range k.Cases {
			s := suite(c.Suite)
			jc := junitCase{Name: c.Case, Classname: "TestMatrix/" + k.ID() + "/" + c.Suite, Time: seconds(c.Seconds)}
			switch c.Action {
			case "pass":
			case "skip":
				jc.Skipped = &junitMessage{Message: c.reason(), Text: c.Output}
				s.Skipped++
			default:
				jc.Failure = &junitMessage{Message: c.reason(), Text: c.Output}
				s.Failures++
			}
			s.Cases = append(s.Cases, jc)
		}
		for _, name := range order {
			s := bySuite[name]
			s.Tests = len(s.Cases)
			sum := 0.0
			for _, c := range k.Cases {
				if c.Suite == name {
					sum += c.Seconds
				}
			}
			s.Time = seconds(sum)
			all.Tests += s.Tests
			all.Failures += s.Failures
			all.Skipped += s.Skipped
			all.Suites = append(all.Suites, *s)
		}
	}
	all.Time = seconds(total)
	b, err := xml.MarshalIndent(all, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}
