package rolefilter

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

func TestFilter(t *testing.T) {
	eps := func() []*scheduling.Endpoint {
		return []*scheduling.Endpoint{{Name: "p", Role: "prefill"}, {Name: "d", Role: "decode"}, {Name: "b", Role: "both"}, {Name: "none"}}
	}
	for _, tc := range []struct {
		factory scheduling.Factory
		params  string
		want    []string
	}{
		{Factory, `{"role":"prefill"}`, []string{"p", "b", "none"}},
		{Factory, `{"role":"decode"}`, []string{"d", "b", "none"}},
		{Factory, `{"role":"both"}`, []string{"b", "none"}},
		{Factory, ``, []string{"b", "none"}},
		{PrefillFactory, ``, []string{"p", "b", "none"}},
		{DecodeFactory, ``, []string{"d", "b", "none"}},
	} {
		t.Run(tc.params, func(t *testing.T) {
			p, err := tc.factory("x", json.RawMessage(tc.params), nil)
			require.NoError(t, err)
			got, err := p.(*Filter).Filter(&scheduling.Request{}, eps())
			require.NoError(t, err)
			var names []string
			for _, e := range got {
				names = append(names, e.Name)
			}
			require.Equal(t, tc.want, names)
		})
	}
	f, _ := New(Type, "prefill")
	_, err := f.Filter(&scheduling.Request{}, []*scheduling.Endpoint{{Name: "d", Role: "decode"}})
	require.ErrorIs(t, err, scheduling.ErrNoHealthyEndpoint)
	require.ErrorContains(t, err, "no endpoint plays the prefill role")
}

func TestFactoryErrors(t *testing.T) {
	_, err := Factory("x", json.RawMessage(`{"role":"encode"}`), nil)
	require.EqualError(t, err, `parameters.role: must be "prefill", "decode" or "both", got "encode"`)
	_, err = PrefillFactory("x", json.RawMessage(`{"role":"decode"}`), nil)
	require.ErrorContains(t, err, `unknown field "role"`)
}
