package train

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows training progress: a progress bar with the loss and steps per second on a
// terminal, and one plain line every 30 seconds otherwise (for logs and CI).
type progress struct {
	w        io.Writer
	bar      *progressbar.ProgressBar
	total    int64
	start    time.Time
	lastLine time.Time
	first    int64
	loss     float64 // exponential moving average of the training loss
}

func newProgress(w io.Writer, first, total int64) *progress {
	p := &progress{w: w, total: total, start: time.Now(), lastLine: time.Now(), first: first}
	if w == nil {
		return p
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("steps"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetDescription("training"),
		)
		_ = p.bar.Set64(first)
	}
	return p
}

func (p *progress) update(r StepResult) {
	if p.w == nil {
		return
	}
	if r.Step == p.first {
		p.loss = r.Loss
	} else {
		p.loss = 0.9*p.loss + 0.1*r.Loss
	}
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("loss %.4f lr %.2e", p.loss, r.LearningRate))
		_ = p.bar.Set64(r.Step + 1)
		return
	}
	if time.Since(p.lastLine) >= 30*time.Second || r.Step+1 == p.total {
		p.lastLine = time.Now()
		done := r.Step + 1 - p.first
		elapsed := time.Since(p.start)
		rate := float64(done) / elapsed.Seconds()
		remaining := time.Duration(float64(p.total-r.Step-1) / rate * float64(time.Second))
		_, _ = fmt.Fprintf(p.w, "step %d/%d  loss %.4f  lr %.2e  %.2f steps/s  elapsed %s  remaining %s\n",
			r.Step+1, p.total, p.loss, r.LearningRate, rate, elapsed.Round(time.Second), remaining.Round(time.Second))
	}
}

// note prints a message on its own line, below the bar.
func (p *progress) note(format string, args ...any) {
	if p.w == nil {
		return
	}
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	_, _ = fmt.Fprintf(p.w, format+"\n", args...)
	if p.bar != nil {
		_ = p.bar.RenderBlank()
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		_, _ = fmt.Fprintln(p.w)
	}
}
