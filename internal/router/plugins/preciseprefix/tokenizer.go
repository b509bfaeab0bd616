package preciseprefix

import "github.com/strata-inference/strata/internal/tokenizer"

var _ Tokenizer = (*tokenizer.Tokenizer)(nil)

// loadTokenizer returns the shared tokenizer named name (internal/tokenizer.Load, contract C1);
// errors wrap tokenizer.ErrUnknown.
func loadTokenizer(name string) (Tokenizer, error) {
	t, err := tokenizer.Load(name)
	if err != nil {
		return nil, err
	}
	return t, nil
}
