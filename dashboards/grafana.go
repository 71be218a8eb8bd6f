// Package dashboards owns msrpscope's Grafana dashboards: the Go code that builds their JSON
// (committed under json/), the provisioning files, and the expansion of the ClickHouse plugin's macros.
package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Data source uids, as the provisioning files name them.
const (
	ClickHouseUID = "msrpscope-clickhouse"
	PrometheusUID = "msrpscope-prometheus"

	clickHouseType = "grafana-clickhouse-datasource"
	prometheusType = "prometheus"
)

// Target formats of the ClickHouse plugin's SQL editor.
const (
	FormatTimeSeries = 0
	FormatTable      = 1
)

// Dashboard is the part of Grafana's dashboard model these dashboards use.
type Dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	Description   string      `json:"description,omitempty"`
	Tags          []string    `json:"tags"`
	Timezone      string      `json:"timezone"`
	Editable      bool        `json:"editable"`
	GraphTooltip  int         `json:"graphTooltip"`
	Refresh       string      `json:"refresh"`
	SchemaVersion int         `json:"schemaVersion"`
	Version       int         `json:"version"`
	Time          TimeRange   `json:"time"`
	Templating    Templating  `json:"templating"`
	Annotations   Annotations `json:"annotations"`
	Panels        []Panel     `json:"panels"`
}

// TimeRange is the dashboard's default range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Templating holds the dashboard's variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Annotations is empty: no annotation queries.
type Annotations struct {
	List []any `json:"list"`
}

// Datasource names a data source by type and uid.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a template variable: query (from a data source), textbox or constant.
type Variable struct {
	Type        string      `json:"type"`
	Name        string      `json:"name"`
	Label       string      `json:"label,omitempty"`
	Description string      `json:"description,omitempty"`
	Datasource  *Datasource `json:"datasource,omitempty"`
	Query       string      `json:"query"`
	Definition  string      `json:"definition,omitempty"`
	Refresh     int         `json:"refresh,omitempty"` // 1 on dashboard load
	Multi       bool        `json:"multi,omitempty"`
	IncludeAll  bool        `json:"includeAll,omitempty"`
	AllValue    string      `json:"allValue,omitempty"`
	Hide        int         `json:"hide"` // 0 shown, 2 hidden
	Current     *Current    `json:"current,omitempty"`
	Options     []any       `json:"options"`
	Sort        int         `json:"sort,omitempty"`
}

// Current is a variable's selected value.
type Current struct {
	Text  any `json:"text"`
	Value any `json:"value"`
}

// Panel is one panel: a time series, a table or a stat.
type Panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description,omitempty"`
	GridPos     GridPos     `json:"gridPos"`
	Datasource  Datasource  `json:"datasource"`
	Targets     []Target    `json:"targets"`
	FieldConfig FieldConfig `json:"fieldConfig"`
	Options     any         `json:"options"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// FieldConfig carries the unit of the panel's values.
type FieldConfig struct {
	Defaults  FieldDefaults `json:"defaults"`
	Overrides []any         `json:"overrides"`
}

// FieldDefaults are the defaults of every field.
type FieldDefaults struct {
	Unit     string `json:"unit,omitempty"`
	Decimals *int   `json:"decimals,omitempty"`
}

// Target is one query: ClickHouse's SQL editor (EditorType, RawSQL, Format) or PromQL (Expr).
type Target struct {
	RefID        string     `json:"refId"`
	Datasource   Datasource `json:"datasource"`
	EditorType   string     `json:"editorType,omitempty"`
	RawSQL       string     `json:"rawSql,omitempty"`
	Format       *int       `json:"format,omitempty"`
	Expr         string     `json:"expr,omitempty"`
	LegendFormat string     `json:"legendFormat,omitempty"`
	Range        bool       `json:"range,omitempty"`
}

// File is a dashboard and the name of its file under json/.
type File struct {
	Name      string
	Dashboard Dashboard
}

// All is every dashboard, in a fixed order.
func All() []File {
	return []File{
		{"overview.json", Overview()},
		{"session.json", Session()},
		{"relay-health.json", RelayHealth()},
	}
}

// JSON is the dashboard as Grafana imports it: indented, keys in struct order, a final newline.
func (d Dashboard) JSON() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", d.UID, err)
	}
	return b.Bytes(), nil
}

var (
	clickHouse = Datasource{Type: clickHouseType, UID: ClickHouseUID}
	prometheus = Datasource{Type: prometheusType, UID: PrometheusUID}
)

func newDashboard(uid, title, desc string, vars []Variable, panels []Panel) Dashboard {
	for i := range panels {
		panels[i].ID = i + 1
	}
	if vars == nil {
		vars = []Variable{}
	}
	return Dashboard{
		UID: uid, Title: title, Description: desc, Tags: []string{"msrpscope", "msrp"},
		Timezone: "utc", Editable: true, GraphTooltip: 1, Refresh: "30s", SchemaVersion: 39, Version: 1,
		Time: TimeRange{From: "now-1h", To: "now"}, Templating: Templating{List: vars},
		Annotations: Annotations{List: []any{}}, Panels: panels,
	}
}

// layout places panels left to right, w columns wide and h high, wrapping at 24 columns.
func layout(panels []Panel) []Panel {
	x, y, rowH := 0, 0, 0
	for i := range panels {
		g := &panels[i].GridPos
		if x+g.W > 24 {
			x, y, rowH = 0, y+rowH, 0
		}
		g.X, g.Y = x, y
		x += g.W
		rowH = max(rowH, g.H)
	}
	return panels
}

func format(f int) *int { return &f }

// sqlPanel is a ClickHouse panel with one SQL target.
func sqlPanel(kind, title, desc, unit string, w, h, f int, sql string) Panel {
	var opts any = map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "right", "calcs": []string{"mean", "max"}},
		"tooltip": map[string]any{"mode": "multi", "sort": "desc"}}
	if kind == "table" {
		opts = map[string]any{"showHeader": true, "cellHeight": "sm"}
	}
	return Panel{
		Type: kind, Title: title, Description: desc, GridPos: GridPos{W: w, H: h}, Datasource: clickHouse,
		Targets:     []Target{{RefID: "A", Datasource: clickHouse, EditorType: "sql", RawSQL: sql, Format: format(f)}},
		FieldConfig: FieldConfig{Defaults: FieldDefaults{Unit: unit}, Overrides: []any{}}, Options: opts,
	}
}

// promPanel is a Prometheus time series panel, one target per expression (legends in pairs
// expr, legend).
func promPanel(title, desc, unit string, w, h int, exprLegend ...string) Panel {
	p := Panel{
		Type: "timeseries", Title: title, Description: desc, GridPos: GridPos{W: w, H: h}, Datasource: prometheus,
		FieldConfig: FieldConfig{Defaults: FieldDefaults{Unit: unit}, Overrides: []any{}},
		Options: map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom"},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"}},
	}
	for i := 0; i+1 < len(exprLegend); i += 2 {
		p.Targets = append(p.Targets, Target{RefID: string(rune('A' + i/2)), Datasource: prometheus,
			Expr: exprLegend[i], LegendFormat: exprLegend[i+1], Range: true})
	}
	return p
}
